"""Lifeguard's tools, apart from the product: the `lifeguard` command (tools.cli), the demo, the
benchmarks (tools.bench), the simulator, local services and clusters (tools.local), Kafka I/O helpers,
the job runner and offline scoring. They may import every package; no package of the product imports them."""
