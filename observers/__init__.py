"""Observers: plugins that implement only the lifecycle hooks (``nascore_run_start``, ``nascore_epoch_end``,
``nascore_run_end``) to log a run as it goes, switched on by the spec's ``log:`` list."""
