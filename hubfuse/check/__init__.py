"""The check: verify(source, request) in full or targeted mode, the family plugins, the worker, the downstream matrix, verdicts and cells."""
