
    size = returnChunkSize(chunk);
    size2 = returnChunkSize(chunk2);
    /* the destination must be large enough (but -1, the error value, slips through) */
    if (size > size2) {
        size = size2;
    }
    memcpy(chunk2, chunk, size * sizeof(int));

    for (i2 = 0; i2 < 10; i2++) {
        printf("%d\n", chunk2[i2]);
    }

    free(chunk);
    free(chunk2);
    return 0;
}
