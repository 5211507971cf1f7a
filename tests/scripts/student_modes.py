"""A student's training run under the modes students set (tests/test_probe.py runs it with and
without the probe): validation and test in ``inference_mode``, under bfloat16 autocast, with float64
as the default dtype, and under ``torch.set_default_device`` through a ``torch.jit.trace`` of the
model. It prints what the student would see.

usage: python student_modes.py DATA_ROOT [RECORD]   (with RECORD, the probe is installed first)
"""

import json
import sys

DATA = sys.argv[1]
if len(sys.argv) > 2:
    import grader.probe.runtime as probe

    probe.install({"num_classes": 10, "data_root": DATA, "seed": 0, "output": sys.argv[2]})

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, SubsetRandomSampler  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 784)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def counted(model: nn.Module, loader: DataLoader, mode: object) -> int:
    model.eval()
    with mode:  # type: ignore[attr-defined]
        return sum(
            int((model(x.to(torch.get_default_dtype())).argmax(1) == y).sum()) for x, y in loader
        )


train = datasets.FashionMNIST(DATA, train=True, download=True, transform=transforms.ToTensor())
test = datasets.FashionMNIST(DATA, train=False, download=True, transform=transforms.ToTensor())
indices = list(range(len(train)))
split = int(0.2 * len(train))
train_loader = DataLoader(train, batch_size=64, sampler=SubsetRandomSampler(indices[split:]))
valid_loader = DataLoader(train, batch_size=64, sampler=SubsetRandomSampler(indices[:split]))
test_loader = DataLoader(test, batch_size=64)
modes = {
    "inference_mode": torch.inference_mode,
    "autocast bfloat16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    "float64": torch.no_grad,
    "default device": torch.no_grad,
}
for name, mode in modes.items():
    if name == "float64":
        torch.set_default_dtype(torch.float64)
    if name == "default device":
        torch.set_default_dtype(torch.float32)
        torch.set_default_device("cpu")
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(2):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x.to(torch.get_default_dtype())), y)
            loss.backward()
            optimizer.step()
        print(
            f"{name} epoch {epoch}: loss {loss.item():.6f} valid "
            f"{counted(model, valid_loader, mode())}"
        )
    # evaluated through a TorchScript trace (the probe's ops must stay out of it)
    if name == "default device":
        model.eval()
        model = torch.jit.trace(model, next(iter(test_loader))[0])
    correct = counted(model, test_loader, mode())
    print(f"{name}: Test Accuracy: {100 * correct / len(test):.2f}% ({correct}/{len(test)})")
if len(sys.argv) > 2:
    probe.export()
    record = json.load(open(sys.argv[2]))
    print(
        json.dumps(
            {
                "faults": record["probe_faults"],
                "tests": [[p["covered"], p["complete"]] for p in record["test_passes"]],
            }
        ),
        file=sys.stderr,
    )
