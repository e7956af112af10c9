"""Engine processes: argv, spawn, stop, exit watching, ports, health probes, logs."""
