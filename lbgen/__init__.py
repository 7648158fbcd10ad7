"""lbgen: a confd-style load-balancer config generator for fleets of Docker hosts."""

__version__ = "0.1.0"
