"""In-memory fakes of the driver interfaces, for unit and functional tests."""
