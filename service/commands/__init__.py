"""The CLI's commands that talk to a running API (through `service.client`), registered
on the `gradwatch` app by service/cli.py, which keeps the commands that run the service."""
