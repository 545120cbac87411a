import sys

from biomeroworker.cli import main

sys.exit(main())
