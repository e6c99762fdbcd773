"""The TensorFlow-free wire package: the model contract, TensorProto <-> numpy, the gRPC client, the error table."""
