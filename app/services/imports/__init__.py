"""Import images, and labels for them, into a project: from uploads, zips, folders, arrays.

The API and `nextlabel import` both describe what they offer as a `Listing` (files, the
manifests among them) and hand it to `plan_import`, then `write_import`, so a file gets the
same checks whichever way it arrives: a decodable image within the pixel limit, not a
duplicate (same sha256) of an image already in the project, and a label, if it has one
(from a manifest, a class folder, or the file itself), that is one of the project's classes.

Labels become training labels (current labels of the import account, which the first round
trains on) or validation labels (a validation item's known label). `plan_import` is the dry
run; `write_import` refuses, writing nothing, while the plan has problems that would lose a
label, unless told to skip them. Files without a label that cannot be imported (not images,
duplicates) are skipped and reported, as they always were.

Split by job, each module saying what it owns: `sources` (what an import offers: uploads,
zips, folders, arrays, before anything is read), `plan` (the dry run: labels resolved from
manifests and class folders, every file checked, compared with the project), `write`
(storing a plan, or unlabelled candidates, in batches of one transaction each) and `account`
(the "import" annotator imported training labels are by). Callers import from here.
"""

from app.services.imports.account import IMPORT_ANNOTATOR, import_annotator
from app.services.imports.plan import ImportPlan, ImportRefused, plan_import
from app.services.imports.sources import (
    Candidate,
    Entry,
    Listing,
    ZipLimits,
    arrays_listing,
    folder_listing,
    is_unsafe_path,
    iter_arrays,
    iter_zip,
    open_zip,
    zip_listing,
)
from app.services.imports.write import (
    BATCH_BYTES,
    BATCH_ITEMS,
    batched_candidates,
    import_batch,
    import_candidates,
    random_key_for,
    write_import,
)

__all__ = [
    "BATCH_BYTES",
    "BATCH_ITEMS",
    "IMPORT_ANNOTATOR",
    "Candidate",
    "Entry",
    "ImportPlan",
    "ImportRefused",
    "Listing",
    "ZipLimits",
    "arrays_listing",
    "batched_candidates",
    "folder_listing",
    "import_annotator",
    "import_batch",
    "import_candidates",
    "is_unsafe_path",
    "iter_arrays",
    "iter_zip",
    "open_zip",
    "plan_import",
    "random_key_for",
    "write_import",
    "zip_listing",
]
