from hubfuse.localhub.cli import hub

hub(prog_name="python -m hubfuse.localhub")
