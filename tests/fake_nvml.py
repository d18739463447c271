"""A stand-in for the `pynvml` module (nvidia-ml-py), for tests on machines without a GPU.

`FakeNVML` answers the nvidia-ml-py calls the telemetry makes (names and units as nvidia-ml-py
defines them: power in milliwatts, the total-energy counter in millijoules) for the cards it is
given, in NVML's order, plus MIG instances by UUID, and raises NVML's errors where a real driver
does: a reading named in a card's `fail` set raises `NotSupported`, as a MIG instance does for
utilisation and power, and a card without `energy_mj` has no total-energy counter (before Volta).
Tests set a card's `power` and `energy_mj` between readings to move its meters.
"""

import types

MIB = 2**20


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


def card(
    uuid, name="NVIDIA L4", total_mib=23034, used_mib=1000, util=50, power_mw=70000, energy_mj=None
):
    return {
        "uuid": uuid,
        "name": name,
        "total": total_mib * MIB,
        "used": used_mib * MIB,
        "util": util,
        "power": power_mw,
        "energy_mj": energy_mj,
        "fail": set(),
    }


class FakeNVML(types.ModuleType):
    """`pynvml` for `cards` (NVML index order), plus MIG instances by UUID."""

    NVMLError = NVMLError

    def __init__(self, cards, migs=None):
        super().__init__("pynvml")
        self.cards = cards
        self.migs = migs or {}

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.cards):
            raise NVMLError("invalid argument")
        return self.cards[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for device in [*self.cards, *self.migs.values()]:
            if device["uuid"] == uuid:
                return device
        raise NVMLError("not found")

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]

    def nvmlDeviceGetName(self, handle):
        return handle["name"]

    def _answer(self, handle, what, value):
        if what in handle["fail"]:
            raise NotSupported(f"{what} not supported")
        return value

    def nvmlDeviceGetMemoryInfo(self, handle):
        info = types.SimpleNamespace(total=handle["total"], used=handle["used"])
        return self._answer(handle, "memory", info)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self._answer(handle, "util", types.SimpleNamespace(gpu=handle["util"], memory=0))

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._answer(handle, "power", handle["power"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle.get("energy_mj") is None:
            raise NotSupported("total energy consumption not supported")
        return self._answer(handle, "energy", handle["energy_mj"])
