"""``smartpay demo``: a whole pay cycle on the local stack and its end-of-cycle report."""
