"""``python -m pagkd_lite``: the ``pagkd-lite`` command line (:mod:`pagkd_lite.apps.cli`),
also under torchrun: ``torchrun --nproc_per_node 2 -m pagkd_lite cv ...``."""

import sys

from pagkd_lite.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
