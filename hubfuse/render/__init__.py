"""What hubfuse shows and publishes as text: check reports, the config PR, the variant card.

Built from check reports (hubfuse.check) and base modules only; a publish report's own renderings
live with it in hubfuse.publish.
"""
