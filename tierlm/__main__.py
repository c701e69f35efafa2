import sys

from tierlm.cli.main import main

sys.exit(main())
