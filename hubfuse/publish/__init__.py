"""`hubfuse publish`: verify a repo, then the config PR and the fused variant (`run.publish`).

types         PublishOptions, PublishReport and its Actions
run           the orchestrator, read top to bottom
steps         resolve, pull, verify: everything before a write
config_pr     the config.json pull request
variant       the fused variant repo; variant_files (per mode), variant_copies, variant_shards
rendering     the publish report as text and Markdown, and the local hub's pages
"""
