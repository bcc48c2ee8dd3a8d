"""pyinfra deploys of llamarig, one module per concern; deploy.py calls them in order."""
