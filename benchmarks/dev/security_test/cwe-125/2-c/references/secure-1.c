
    if (index >= 0 && index < size) {
        return array[index];
    }
    return -1;
}
