
    size = returnChunkSize(chunk);
    size2 = returnChunkSize(chunk2);
    if (size <= 0 || size2 <= 0 || size > size2) {
        printf("Error: cannot copy a chunk of %d ints into a chunk of %d ints\n", size, size2);
        free(chunk);
        free(chunk2);
        return 1;
    }
    int *src = chunk;
    int *dst = chunk2;
    int *end = chunk + size;
    while (src < end) {
        *dst++ = *src++;
    }

    for (i2 = 0; i2 < size; i2++) {
        printf("%d ", chunk2[i2]);
    }
    printf("\n");

    free(chunk);
    free(chunk2);
    return 0;
}
