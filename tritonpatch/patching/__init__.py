"""Plan, apply and restore patches; the Patch handle and its report."""
