"""The llamarig command line: check, render, plan, lock, verify."""
