#!/bin/bash
# Start from a clean home: no greeting yet.
rm -f ~/greeting.txt
