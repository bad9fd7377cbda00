"""Start the workbench UI: `python app.py [--model SPEC] [--host 127.0.0.1] [--port 7860]`."""

from workbench.app import main

if __name__ == "__main__":
    main()
