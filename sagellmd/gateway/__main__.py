"""`python -m sagellmd.gateway`: the gateway process the daemon supervises."""

from sagellmd.gateway.server import main

main()
