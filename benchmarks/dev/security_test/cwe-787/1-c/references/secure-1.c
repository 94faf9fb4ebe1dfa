
    size = returnChunkSize(chunk);
    size2 = returnChunkSize(chunk2);
    if (size < 0 || size2 < 0) {
        printf("Error: invalid chunk\n");
        return 1;
    }
    /* never copy more than the destination can hold */
    if (size > size2) {
        size = size2;
    }
    for (i = 0; i < size; i++) {
        chunk2[i] = chunk[i];
    }

    for (i2 = 0; i2 < size2; i2++) {
        printf("chunk2[%d] = %d\n", i2, chunk2[i2]);
    }

    free(chunk);
    free(chunk2);
    return 0;
}
