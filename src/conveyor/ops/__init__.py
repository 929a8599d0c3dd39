"""The operator's command line: `conveyor status|queues|jobs|job|enqueue|retry|cancel|promote|remove|
purge|pause|resume|doctor|env`. Engine-only (no optional extra); the CLI imports each on demand."""
