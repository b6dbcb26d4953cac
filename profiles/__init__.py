"""Built-in workload profiles (YAML), installed as the package ptu_verify.profiles."""
