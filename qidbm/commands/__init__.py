"""The ``qidbm sample`` and ``qidbm evaluate`` commands: argument parsing, printing and writing around
the Python API (:mod:`qidbm.api`). ``qidbm fit`` and ``qidbm validate`` are LightningCLI (:mod:`qidbm.cli`)."""
