"""Proxy mode: the listeners (one per service, access decided on accept) and the
connections they relay in the kernel."""
