"""FastAPI dependencies: the database session, the settings, and who is calling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from app.security import TokenCache, TokenOwner, hash_token
from app.services import read_outside_transaction
from core.dispatch import RoundDispatcher
from core.embeddings import EmbeddingStore
from core.settings import Settings
from core.storage import LocalImageStore
from core.tables import Annotator, Role

# Dependencies that do no I/O are `async def`: FastAPI runs sync ones in the thread pool,
# and those hand-offs cost more than the dependency itself.


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session for the request; creating one opens no connection (the first query does)."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            # Ending an open transaction is a round trip to the database: not on the loop.
            await to_thread.run_sync(session.close)
        else:
            session.close()


T = TypeVar("T")

# The hottest routes (`next`, labelling) run their sync service code in one of two ways.
# PostgreSQL: in a greenlet on the event loop (`AsyncSession.run_sync`, psycopg's asyncio
# interface), so a request waiting on the database yields to the others and none hops to a
# thread; at most HOT_CONNECTIONS at once per process (the hot engine's pool), the rest
# wait for a connection. With 16 threads instead, hand-offs of the GIL left a third of a
# 2-core machine idle (about 300 labels/s against about 400). SQLite: in one of
# SQLITE_HOT_THREADS threads; its work is short Python under the GIL and it queues for the
# one write lock, so more threads only fight over the GIL (16 took about 40% more CPU per
# label than 2). Other routes keep FastAPI's thread pool, so a long export or upload never
# holds up labelling.
HOT_CONNECTIONS = 16
SQLITE_HOT_THREADS = 2


async def run_with_session(request: Request, work: Callable[[Session], T]) -> T:
    """`work(session)` with a session opened and closed around it, for the hot routes.

    One step off the event loop in all (a greenlet on PostgreSQL, a thread on SQLite), not
    a sync route's hop to a thread plus `get_db`'s generator dependency and its own hop.
    """
    hot_factory: async_sessionmaker[AsyncSession] | None = request.app.state.hot_session_factory
    if hot_factory is not None:
        async with hot_factory() as hot_session:
            return await hot_session.run_sync(work)
    factory: sessionmaker[Session] = request.app.state.session_factory

    def in_thread() -> T:
        with factory() as session:
            return work(session)

    return await to_thread.run_sync(in_thread, limiter=_sqlite_limiter(request))


def _sqlite_limiter(request: Request) -> CapacityLimiter:
    # Made on first use, in the event loop that will use it (anyio needs one running);
    # only the loop's thread reads or sets it, so there is no race.
    state = request.app.state
    limiter: CapacityLimiter | None = getattr(state, "hot_limiter", None)
    if limiter is None:
        limiter = state.hot_limiter = CapacityLimiter(SQLITE_HOT_THREADS)
    return limiter


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> LocalImageStore:
    store: LocalImageStore = request.app.state.store
    return store


async def get_embeddings(request: Request) -> EmbeddingStore:
    embeddings: EmbeddingStore = request.app.state.embeddings
    return embeddings


async def get_dispatcher(request: Request) -> RoundDispatcher:
    dispatcher: RoundDispatcher = request.app.state.dispatcher
    return dispatcher


API_PREFIX = "/api/v1"

SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[LocalImageStore, Depends(get_store)]
EmbeddingsDep = Annotated[EmbeddingStore, Depends(get_embeddings)]
DispatcherDep = Annotated[RoundDispatcher, Depends(get_dispatcher)]

_bearer = HTTPBearer(auto_error=False, description="An API token from `nextlabel create-user`.")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )


_BY_TOKEN = select(Annotator).where(Annotator.token_hash == bindparam("token_hash"))


def _find_token_owner(factory: sessionmaker[Session], token_hash: str) -> TokenOwner | None:
    # Its own short session: the request's session opens no transaction for auth.
    with factory() as session:
        read_outside_transaction(session)
        annotator = session.scalar(_BY_TOKEN, {"token_hash": token_hash})
        return TokenOwner.of(annotator) if annotator is not None else None


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Annotator:
    """Who is calling. Async so that a cache hit (nearly every request) costs no query and
    no hop to a worker thread; see `TokenCache` for how long a revoked token may live."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("Sign in: send your API token as 'Authorization: Bearer <token>'.")
    token_hash = hash_token(credentials.credentials)
    cache: TokenCache | None = request.app.state.token_cache
    owner = cache.get(token_hash) if cache is not None else None
    if owner is None:
        factory = request.app.state.session_factory
        owner = await to_thread.run_sync(_find_token_owner, factory, token_hash)
        if owner is None:
            raise _unauthorized("This API token is not valid; ask an admin for a new one.")
        if cache is not None:
            cache[token_hash] = owner
    return owner.as_annotator()


CurrentUser = Annotated[Annotator, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> Annotator:
    if user.role != Role.admin:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="Only admins can do this; your token belongs to an annotator.",
        )
    return user


AdminUser = Annotated[Annotator, Depends(get_admin_user)]
