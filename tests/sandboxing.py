"""Pieces the sandbox and hostile tests share: a small model notebook cell, and what a sandbox left
alive."""

from __future__ import annotations

import os
import subprocess

MODEL = """
import torch, torch.nn as nn, torch.nn.functional as F
from torchvision import datasets, transforms
test_data = datasets.FashionMNIST('data', train=False, download=True, transform=transforms.ToTensor())
test_loader = torch.utils.data.DataLoader(test_data, batch_size=50)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)
    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 784))))))
model = Net()
"""  # noqa: E501


def sandboxed_processes() -> list[str]:
    """Processes still alive that a sandbox started (run as a sandbox user, or bwrap itself)."""
    listing = subprocess.run(
        ["ps", "-eo", "uid=,stat=,comm="], capture_output=True, text=True
    ).stdout.splitlines()
    alive = [line.split() for line in listing if not line.split()[1].startswith("Z")]
    return [
        " ".join(p)
        for p in alive
        if (int(p[0]) >= 60000 and p[0] != str(os.geteuid())) or p[-1] == "bwrap"
    ]
