
    if (index < sizeof(array))
        return array[index];
    return -1;
}
