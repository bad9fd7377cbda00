"""Start the workbench UI: `python app.py [--model SPEC] [--host 127.0.0.1] [--port 7860]`."""

from workbench.startup import collector_paused

with collector_paused():  # the UI's imports only (workbench/startup.py); the model loads later, collector on
    from workbench.app import main

if __name__ == "__main__":
    main()
