#!/usr/bin/env python
# coding: utf-8

# In[ ]:


# ## HW4: Convolutional Neural Network, FashionMNIST (reference solution)
# Same network (conv1/conv2/fc), same 4 rounds and HOLDOUT; improved with input
# normalization, BatchNorm2d, AdamW + OneCycleLR and label smoothing.
# Rules: do NOT change NUM_ROUNDS (4 epochs), HOLDOUT (0.1), or the weight layers of Net:
# conv1 and conv2 (kernel 3, stride 1, padding 1; 1->8 and 8->16 channels) and fc
# (16*7*7 -> 10). You may add normalization, activation and dropout layers and change
# everything else (optimizer, learning rate, scheduler, loss, batch size, weight init,
# data augmentation, input normalization, ...).

import torch
import numpy as np


# In[ ]:


# ## Load the Data
from torchvision import datasets
import torchvision.transforms as transforms
from torch.utils.data import DataLoader, random_split

# number of subprocesses to use for data loading
num_workers = 0
# how many samples per batch to load
batch_size = 64
# fraction of the training set held out for validation (do NOT change)
HOLDOUT = 0.1

# convert data to torch.FloatTensor and normalize with the FashionMNIST mean/std
transform = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize((0.2860,), (0.3530,)),
])

# choose the training and test datasets
train_data = datasets.FashionMNIST(root='data', train=True,
                                   download=True, transform=transform)
test_data = datasets.FashionMNIST(root='data', train=False,
                                  download=True, transform=transform)

# hold out part of the training set for validation
train_set, valid_set = random_split(train_data, [1 - HOLDOUT, HOLDOUT])

# prepare data loaders
train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                          num_workers=num_workers)
valid_loader = DataLoader(valid_set, batch_size=batch_size, num_workers=num_workers)
test_loader = DataLoader(test_data, batch_size=batch_size, shuffle=False,
                         num_workers=num_workers)

classes = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
           'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']


# In[ ]:


# ## Define the Network Architecture
import torch.nn as nn
import torch.nn.functional as F

# define the CNN architecture
class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        # convolutional layer (1x28x28 -> 8x28x28)
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        # convolutional layer (8x14x14 -> 16x14x14)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        # max pooling layer (halves the height and width)
        self.pool = nn.MaxPool2d(2, 2)
        # linear layer (16*7*7 -> 10)
        self.fc = nn.Linear(16 * 7 * 7, 10)
        # allowed additions: normalization layers
        self.bn1 = nn.BatchNorm2d(8)
        self.bn2 = nn.BatchNorm2d(16)

    def forward(self, x):
        # two convolutions, each followed by BatchNorm, ReLU and max pooling
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        # flatten the feature maps
        x = x.view(-1, 16 * 7 * 7)
        # output layer
        x = self.fc(x)
        return x

# initialize the CNN
model = Net()
print(model)


# In[ ]:


# ## Specify Loss Function and Optimizer
# specify loss function (categorical cross-entropy with label smoothing)
criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

# specify optimizer (AdamW) and a one-cycle learning-rate schedule, stepped per batch
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
scheduler = torch.optim.lr_scheduler.OneCycleLR(
    optimizer, max_lr=1e-2, epochs=4, steps_per_epoch=len(train_loader))


# In[ ]:


# ## Train the Network
# number of epochs to train the model (do NOT change)
NUM_ROUNDS = 4


def train(model, rounds):
    """Train for `rounds` epochs, saving the model whenever the validation loss decreases."""
    # initialize tracker for minimum validation loss
    valid_loss_min = np.inf  # set initial "min" to infinity

    for epoch in range(rounds):
        # monitor training loss
        train_loss = 0.0
        valid_loss = 0.0

        ###################
        # train the model #
        ###################
        model.train()  # prep model for training
        for data, target in train_loader:
            # clear the gradients of all optimized variables
            optimizer.zero_grad()
            # forward pass: compute predicted outputs by passing inputs to the model
            output = model(data)
            # calculate the loss
            loss = criterion(output, target)
            # backward pass: compute gradient of the loss with respect to model parameters
            loss.backward()
            # perform a single optimization step (parameter update)
            optimizer.step()
            # advance the learning-rate schedule
            scheduler.step()
            # update running training loss
            train_loss += loss.item() * data.size(0)

        ######################
        # validate the model #
        ######################
        model.eval()  # prep model for evaluation
        with torch.no_grad():
            for data, target in valid_loader:
                # forward pass: compute predicted outputs by passing inputs to the model
                output = model(data)
                # calculate the loss
                loss = criterion(output, target)
                # update running validation loss
                valid_loss += loss.item() * data.size(0)

        # print training/validation statistics
        # calculate average loss over an epoch
        train_loss = train_loss / len(train_loader.dataset)
        valid_loss = valid_loss / len(valid_loader.dataset)

        print('Epoch: {} \tTraining Loss: {:.6f} \tValidation Loss: {:.6f}'.format(
            epoch + 1,
            train_loss,
            valid_loss
            ))

        # save model if validation loss has decreased
        if valid_loss <= valid_loss_min:
            print('Validation loss decreased ({:.6f} --> {:.6f}).  Saving model ...'.format(
            valid_loss_min,
            valid_loss))
            torch.save(model.state_dict(), 'model.pt')
            valid_loss_min = valid_loss


train(model, NUM_ROUNDS)


# In[ ]:


# ## Load the Model with the Lowest Validation Loss
model.load_state_dict(torch.load('model.pt'))


# In[ ]:


# ## Test the Trained Network
# initialize lists to monitor test loss and accuracy
test_loss = 0.0
class_correct = list(0. for i in range(10))
class_total = list(0. for i in range(10))

model.eval()  # prep model for evaluation

with torch.no_grad():
    for data, target in test_loader:
        # forward pass: compute predicted outputs by passing inputs to the model
        output = model(data)
        # calculate the loss
        loss = criterion(output, target)
        # update test loss
        test_loss += loss.item() * data.size(0)
        # convert output probabilities to predicted class
        _, pred = torch.max(output, 1)
        # compare predictions to true label
        correct = np.squeeze(pred.eq(target.data.view_as(pred)))
        # calculate test accuracy for each object class
        for i in range(len(target)):
            label = target.data[i]
            class_correct[label] += correct[i].item()
            class_total[label] += 1

# calculate and print avg test loss
test_loss = test_loss / len(test_loader.dataset)
print('Test Loss: {:.6f}\n'.format(test_loss))

for i in range(10):
    if class_total[i] > 0:
        print('Test Accuracy of %5s: %2d%% (%2d/%2d)' % (
            classes[i], 100 * class_correct[i] / class_total[i],
            np.sum(class_correct[i]), np.sum(class_total[i])))
    else:
        print('Test Accuracy of %5s: N/A (no training examples)' % (classes[i]))

print('\nTest Accuracy (Overall): %.2f%% (%d/%d)' % (
    100. * np.sum(class_correct) / np.sum(class_total),
    np.sum(class_correct), np.sum(class_total)))
