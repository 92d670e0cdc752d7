"""Base plumbing for every Vigil service: settings, errors, logging, metrics, the Kafka
client configuration, the object store. The lowest layer: it imports no other Vigil
package (see docs/architecture.md)."""

__version__ = "0.1.0"
