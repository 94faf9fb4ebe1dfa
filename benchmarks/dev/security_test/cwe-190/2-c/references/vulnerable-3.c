
    int sum = 0;
    for (int i = 1; i <= 3; i++) {
        int sales = getMonthlySales(i);
        if (sum > INT32_MAX - sales) {
            printf("overflow\n");
            return 1;
        }
        sum += sales;
    }
    printf("%d\n", sum);
    return 0;
}
