import sys

from smartpay_tools.buffr_sim.options import main

sys.exit(main())
