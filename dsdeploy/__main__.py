import sys

from dsdeploy.cli import main

sys.exit(main())
