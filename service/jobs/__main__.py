"""``python -m hyperprior.service.jobs JOB_ID``: the worker process of one refinement job."""

import sys

from hyperprior.service.jobs.worker import main

sys.exit(main())
