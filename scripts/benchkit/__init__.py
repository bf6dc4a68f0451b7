"""The parts of the benchmarks in scripts/: bench.py (the agent against the limit),
bench_proxy.py (the forwarder against docker-proxy) and bench_pool.py (the durable port
pool). The scripts are run by path, which puts scripts/ on sys.path, so they import these
modules as `benchkit.*`; child processes are started through the scripts themselves."""
