
    int k;
    for (k = 0; k < (int)(sizeof(ids) / sizeof(ids[0])); k++) {
        if (k == index)
            return ids[k];
    }
    return -1;
}
