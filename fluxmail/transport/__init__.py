"""The transport layer: the contract every transport implements, and the transports."""
