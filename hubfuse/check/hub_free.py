"""Imported first by the workers' forkserver: its environment, so every worker's, holds no Hub token.

The workers load local files only; the forkserver inherits the command's environment (the write
token included) and every worker is forked from it.
"""

from hubfuse.childenv import drop_hub_tokens_here

drop_hub_tokens_here()
