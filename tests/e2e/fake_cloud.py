"""Ray's fake multi-node provider, behaving as a cloud: slow set-ups, refused launches.

Used by tests/e2e/test_autoscaler.py through Ray's `external` provider (`provider: {type:
external, module: tests.e2e.fake_cloud.FakeCloudProvider}`), loaded by the cluster's own
autoscaler monitor (ray/autoscaler/_private/providers.py). Two keys of the provider config:
- `slow_node_types` ({type: seconds}): a node of such a type exists at once, with the status a
  `ray up` node has while its set-up commands run (`setting-up`), and its raylet starts only
  after those seconds: the autoscaler reports it as a pending node meanwhile, as it reports a
  real machine pulling the node image;
- `refused_node_types` ({type: "Category: description"}): every launch of such a type fails
  with a `NodeLaunchException`, as AWS's provider answers a quota or a stock-out
  (`InsufficientInstanceCapacity`); the autoscaler reports the type unavailable, with the text.
Every other type is the fake provider's own (its raylet starts at once).
"""

from __future__ import annotations

import threading

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.node_launch_exception import NodeLaunchException
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_SETTING_UP,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)


class FakeCloudProvider(FakeMultiNodeProvider):
    """A fake multi-node provider whose `slow_node_types` take their seconds to set up and
    whose `refused_node_types` are never launched."""

    def __init__(self, provider_config, cluster_name):
        super().__init__(provider_config, cluster_name)
        slow = provider_config.get("slow_node_types", {})
        self._slow = {str(k): float(v) for k, v in slow.items()}
        self._refused = {str(k): str(v) for k, v in provider_config.get(
            "refused_node_types", {}).items()}  # fmt: skip
        self._reuse: str | None = None  # the id the next raylet takes: its placeholder's

    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        node_type = tags[TAG_RAY_USER_NODE_TYPE]
        if node_type in self._refused:
            category, _, description = self._refused[node_type].partition(": ")
            raise NodeLaunchException(category, description, src_exc_info=None)
        delay = self._slow.get(node_type)
        if delay is None:
            return super().create_node_with_resources_and_labels(
                node_config, tags, count, resources, labels
            )
        for _ in range(count):
            with self.lock:
                node_id = super()._next_hex_node_id()
                self._nodes[node_id] = {
                    "tags": {**tags, TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                             TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_SETTING_UP},
                    "node": None,
                }  # fmt: skip
            args = (node_id, node_config, tags, resources, labels)
            threading.Timer(delay, self._set_up, args).start()
        return None

    def _set_up(self, node_id, node_config, tags, resources, labels):
        """The set-up is over: the node's raylet starts, under the placeholder's id."""
        with self.lock:
            if node_id not in self._nodes:  # terminated while being set up
                return
            del self._nodes[node_id]
            self._reuse = node_id
            self._create_node_with_resources_and_labels(node_config, tags, 1, resources, labels)

    def _next_hex_node_id(self):
        if self._reuse is not None:
            node_id, self._reuse = self._reuse, None
            return node_id
        return super()._next_hex_node_id()

    def _terminate_node(self, node):
        if node.get("node") is not None:  # a placeholder has no processes
            super()._terminate_node(node)
