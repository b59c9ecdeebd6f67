import sys

from smartpay_tools.cli import main

sys.exit(main())
