
    if (index < 0 || index > IDS_ARRAY_SIZE)
        return -1;
    return ids[index];
}
