
    if (array == NULL || index < 0 || index >= size)
        return -1;
    else
        return *(array + index);
}
