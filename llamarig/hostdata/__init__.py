"""The data model: what a person declares in host data, its schema, its validation and loading."""
