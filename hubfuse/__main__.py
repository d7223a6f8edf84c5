from hubfuse.cli import main

main()
