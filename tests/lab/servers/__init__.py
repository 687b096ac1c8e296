"""The lab's own servers, each run as a process inside a lab namespace."""
