"""What the controller looks up outside the data: git refs, the Hub, secrets, a rig over SSH."""
