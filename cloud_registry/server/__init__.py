"""The registry gRPC server: servicers over the storage interface."""
