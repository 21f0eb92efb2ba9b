"""kubenas: Kubernetes-native Neural Architecture Search with reinforcement learning."""

__version__ = "0.1.0"
