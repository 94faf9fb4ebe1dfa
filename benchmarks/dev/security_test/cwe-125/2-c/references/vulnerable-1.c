
    if (index < size) {
        return array[index];
    } else {
        return -1;
    }
}
