
    if (index >= 0 && index < IDS_ARRAY_SIZE) {
        return ids[index];
    }
    return -1;
}
